"""This process's name in every table several processes write (windows, leases, events)."""

import os
import socket

PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}"
