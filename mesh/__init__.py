"""DictaMesh: change capture to Avro on Kafka, an entity catalog and federated GraphQL."""

__version__ = "0.1.0"

__all__ = ["__version__"]
