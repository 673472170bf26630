"""Describing images for a language model that cannot see them (OCR and ImageNet labels).

Checking and decoding the images clients send lives in ``openrealtime.images``.
"""
