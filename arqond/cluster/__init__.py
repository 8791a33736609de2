"""Several arqond nodes as one bus, through NATS (arqond(8) CLUSTER).

app.py imports this package only when ``cluster.nats_url`` is set: a single node loads no NATS
client. Its modules: ``names`` spells room and channel names for NATS (pure), ``link`` keeps
the connection, ``store`` is the streams' store on JetStream, ``adapter`` wires them in.
"""
