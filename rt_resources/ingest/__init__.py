"""Index a drop folder, link its objects into courses, and describe them."""
