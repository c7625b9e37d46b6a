from setuptools import setup

setup(name="nolicence", version="0.1")
