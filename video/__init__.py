"""Video files: decoding clips into IMAGE frames (decode.py) and encoding frames into videos (encode.py).

Load Video's settings are declared in decode.py (settings.Number / Choice: MAX_FRAMES, SHORT_SIDE, ...).

Plain PyAV / Pillow / torch; imports no ComfyUI module, and of the pack only settings/.
"""
