"""The lab's own machinery, outside the services and the CLI: throwaway brokers, Redis servers
and databases, supervised processes of the ecosystem, and the fault suite (`apis chaos`)."""
