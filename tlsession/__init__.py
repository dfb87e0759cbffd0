"""
tlsession: sessions shared by every process of a Twisted site.
"""
