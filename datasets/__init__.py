"""Recipes (TOML), taxonomies and caption schemas: data shipped as package data `sila.datasets`."""
