"""MNIST-family image classification: the library behind the DVC pipeline's stages.

Kept empty on purpose: each stage imports only the modules it uses, so dvc.yaml can list
exactly those files as the stage's code dependencies.
"""
