"""Sharded TFRecord data layer: conversion, manifest, verification and the tf.data reader."""
