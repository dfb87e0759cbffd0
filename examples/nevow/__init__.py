"""
Nevow's classic example applications, written again for Python 3 against
L{tlcache.nevow}. Each module's docstring says how to serve it.
"""
