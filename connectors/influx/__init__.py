from connectors.influx.protocol import InfluxRejected
from connectors.influx.store import InfluxBuckets, InfluxTimeSeries

__all__ = ["InfluxBuckets", "InfluxRejected", "InfluxTimeSeries"]
