"""Upload areas (the HCA upload service's flow): an ingestion service creates an area, a
submitter stages many files into it (through the gateway, or straight to storage with
direct multipart uploads), each file is checksummed after the fact by checksum workers,
validated as a set by a command validator, and the area's files are submitted: promoted to
perm and announced on ``platform.upload.available``. See README.md, "Upload areas".
"""
