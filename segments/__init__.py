"""A clip edited in segments, so that the host holds one segment whatever the clip's length: where the
segments lie and how long they are (`plan`), how two segments' edits of the frames they share become one
(`blend`), and the output written as the segments finish, kept on disk so that an interrupted edit resumes
from the last finished segment (`assembly`).

Plain numpy and PyAV through video/; may import settings/ and video/, never ComfyUI or headless/: the
`edit` command runs each segment as an edit of its own (headless/long_edit.py).
"""
