"""DL/T 645-2007 electricity meters on RS-485. So far the pure frame and value codec (codec.py)."""
