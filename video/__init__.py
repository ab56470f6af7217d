"""Video files: decoding clips into IMAGE frames (decode.py) and encoding frames into videos (encode.py).

Plain PyAV / Pillow / torch; imports no ComfyUI module and nothing else of the pack.
"""
