"""Code that runs ON the appliance (stdlib + `cryptography` only); `install.py` is copied there as one file."""
