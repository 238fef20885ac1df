"""Sift's domain: everything below the API and the worker."""
