"""ST-GCN tooling (yysijie/st-gcn re-implemented): the graph, the PyTorch model, checkpoint
loading, ONNX export, training, the fall model and its evaluation. Reached through
``actionstream stgcn ...`` (:mod:`workers.offline.stgcn.stgcncli`); PyTorch is the optional
``train`` extra. The action worker runs the exported ONNX with onnxruntime, never this.
"""
