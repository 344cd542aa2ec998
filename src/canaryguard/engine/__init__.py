"""The engine: services that run the domain over the ports (store, bus, clock, key ring)."""
