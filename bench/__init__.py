"""Failover benchmark of nginx-ha's defaults against the tutorial's setup (`make bench`, see __main__)."""
