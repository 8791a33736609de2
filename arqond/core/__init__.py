"""The I/O-free core: it takes frames in and hands frames to sinks; it never touches a socket."""
