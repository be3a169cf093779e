"""The camera layer, shared by the stages that read cameras (ingest, record): a camera's definition
(:mod:`~pipeline.cameras.spec`: its URLs and their checks, per-camera settings in
:mod:`~pipeline.cameras.settings`) and the camera registry (:mod:`~pipeline.cameras.registry`: the
compacted topic table and the watcher through which a consumer group shares the cameras).

It sits between the stages and ``pipeline.common`` (pyproject's import contracts): the stages
import it, it imports only ``pipeline.common``. Reading a stream (OpenCV capture, PyAV demuxing)
is the stages' own.
"""
