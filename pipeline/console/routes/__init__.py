"""The console's API, one router per page: session, cameras, rules, alerts, models, ops."""
