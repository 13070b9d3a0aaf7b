"""Differential oracle tests: kubepci's NetworkPolicy engine against network-config-analyzer."""
