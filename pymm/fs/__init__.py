"""Filesystems: tmpfs (shmem.py) and hugetlbfs (part 2)."""
