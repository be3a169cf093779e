"""Model loading (ultralytics and legacy YOLOv5), batched inference and training."""
