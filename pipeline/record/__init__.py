"""The recording stage: camera packets copied (never decoded) into MP4 segments on disk, an index
of them in Redis, and exports cut from them (docs/recordings.md). It imports no other stage."""
