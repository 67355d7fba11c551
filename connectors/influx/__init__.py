from connectors.influx.store import InfluxBuckets, InfluxRejected, InfluxTimeSeries

__all__ = ["InfluxBuckets", "InfluxRejected", "InfluxTimeSeries"]
