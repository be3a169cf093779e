"""Model loading (ultralytics and legacy YOLOv5), batched inference, tracking and training."""

import os

# A production worker must never pip-install packages at run time because a model needs them;
# missing dependencies are install-time errors (see pyproject.toml).
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
