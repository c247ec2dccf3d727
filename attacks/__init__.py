"""Attacks: model poisoning (client-side transforms on malicious clients) and gradient
inversion (observers of the ServerView)."""
