"""The asset graph: partitions, assets, sensors, jobs and the one Definitions object."""
