"""Mesh renderers, one module per mesh behind one interface (after Flagger's pkg/router), each
registered in meshgen.render.registry."""
