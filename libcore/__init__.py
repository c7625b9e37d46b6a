"""libcore: the C hot paths (shingling, hashing, MinHash) wrapped with cffi. Built in step 6 of the plan."""
