"""The live center's wiring: what ``npucenter up`` composes from the edges below it.

Above both the control-plane API and the gateway (neither imports the other): the fleet's
registration in the store and the serving of its deployments (:mod:`npucenter.live.fleet`).
"""
