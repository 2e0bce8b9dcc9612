"""``rtpipeline run``: the headless way in, on the same run queue as the UI and the sensor.

One execution path: the CLI indexes the drop, adds the course partitions, decides per course what
changed (:mod:`.plan`), and submits runs to the instance's run queue with the same tags the drop
sensor uses (:mod:`.submit`); the daemon launches them, so the run limits, the ``gpu`` pool, run
priority and run monitoring hold for every run. When no daemon heartbeats for the instance, the
CLI starts one for the duration of the command (:mod:`.daemon`). It follows the runs, submitting
each course's next stage as soon as the previous one succeeded (segmentation, then the derived
stage), the cohort tables once every course is done, and shows progress (:mod:`.follow`); then it
prints the per-course summary (:mod:`.summary`). A crash of an earlier run is recovered first
(:mod:`.recovery`). The instance and the data-root lock are in :mod:`.instance`.
"""
