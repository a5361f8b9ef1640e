"""Shipped profiles and recipes (JSON), installed as the `quota.profiles` package data."""
