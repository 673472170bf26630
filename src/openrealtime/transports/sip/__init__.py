"""SIP entry: a user agent server that answers phone calls into Realtime sessions."""
