"""What the staff dashboard needs from the domain: accounts and their sign-in throttle,
the inbox, a patient's timeline, delivery problems and the overview's figures."""
