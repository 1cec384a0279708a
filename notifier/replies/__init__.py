"""Replies: what patients answer, kept and sorted (keywords go to consent)."""
