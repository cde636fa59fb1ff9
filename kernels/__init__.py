"""Triton kernels for lowprec, installed as ``lowprec.kernels``."""
