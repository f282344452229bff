"""Leaderboards from run folders, written in registered formats (md, csv, json, html), and plots."""
