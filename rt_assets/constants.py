"""Names shared across the asset graph: groups, run tags, pools, run states."""

from dagster import DagsterRunStatus

COURSE_GROUP = "course"  #: per-course assets, partitioned by course key
COHORT_GROUP = "cohort"  #: cohort tables over all courses
SEGMENTATION_GROUP = "segmentation"  #: GPU stage: TotalSegmentator and custom nnU-Net models
DERIVED_GROUP = "derived"  #: CPU work on segmentation results: crops, custom structures

#: TotalSegmentator's steps: the input (course group, CPU), inference (segmentation group, the only
#: one in the GPU pool), the masks on the CT grid and the RTSTRUCT (derived group, CPU)
TOTALSEG_ASSETS = ("totalseg_input", "totalseg_inference", "totalseg_masks", "totalseg_rtstruct")

COURSE_JOB = "course_job"
COHORT_JOB = "cohort_job"
SEGMENTATION_JOB = "segmentation_job"
DERIVED_JOB = "derived_job"

TAG_COURSE = "rt/course"  #: the course key (a pseudonym; never a patient ID)
TAG_FINGERPRINT = "rt/fingerprint"  #: content fingerprint of the course when the run was requested
TAG_LAUNCHED_BY = "rt/launched_by"  #: sensor | cli | ui
TAG_GPU = "rt/gpu"  #: runs that segment on the GPU carry rt/gpu=true (limited in dagster.yaml)

GPU_POOL = "gpu"  #: concurrency pool of segmentation steps (limit: the machine's GPU slots)
CELERY_GPU_QUEUE = "gpu"  #: the Celery queue of GPU steps (one worker per GPU serves it)
#: tags of every step that runs on a GPU. Celery (step_executor: celery) sends it to the gpu queue;
#: on Kubernetes (k8s_job_executor / K8sRunLauncher) its pod asks for one GPU and may sit on a
#: GPU node. Other executors ignore them.
GPU_STEP_TAGS = {
    "dagster-celery/queue": CELERY_GPU_QUEUE,
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    },
}

CODE_LOCATION = "rtpipeline"  #: the code location's name (workspace.yaml, the CLI's submissions, its daemon)
TAG_CLI_SESSION = "rt/cli_session"  #: the `rtpipeline run` invocation that submitted a run
TAG_DATA_ROOT = "rt/data_root"  #: short digest of the data root a CLI run wrote to (no path in the tags)
TAG_STAGE = "rt/stage"  #: course | segmentation | derived | cohort: which step of a course a CLI run is

#: a run in these states is queued or in flight (the cohort sensor waits; courses "in flight")
UNFINISHED_RUNS = (
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
)
