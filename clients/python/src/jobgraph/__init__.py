"""A Python client for jobgraph, for notebooks and scripts.

```python
from pathlib import Path
from jobgraph import Client

client = Client("http://127.0.0.1:8000", token="jg_...")
job = client.submit("sequence-stats", workspace="ws_01...", inputs={"sequences": Path("reads.fa")})
job = job.wait()  # a progress bar until it ends
job.download("results")  # its output files
```
"""

from .client import Client, InputValue, Url
from .errors import JobFailed, JobgraphError, ServerUnreachable
from .history import COLUMNS, History, Page
from .live import Subscription
from .models import (
    FINAL_STATUSES,
    CostLine,
    Estimate,
    Event,
    File,
    Job,
    Price,
    Tool,
    ToolInput,
    Workspace,
)

__all__ = [
    "COLUMNS",
    "FINAL_STATUSES",
    "Client",
    "CostLine",
    "Estimate",
    "Event",
    "File",
    "History",
    "InputValue",
    "Job",
    "JobFailed",
    "JobgraphError",
    "Page",
    "Price",
    "ServerUnreachable",
    "Subscription",
    "Tool",
    "ToolInput",
    "Url",
    "Workspace",
]
