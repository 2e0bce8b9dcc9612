"""Partition definitions: one dynamic partition per radiotherapy course."""

from dagster import DynamicPartitionsDefinition

COURSES = "courses"
course_partitions = DynamicPartitionsDefinition(name=COURSES)
