"""
tlbalance: a load-balancing proxy for Twisted sites that tells every backend
the real client address, and the backend-side API that trusts and uses it.
"""
