//! Connections to Redis, alone or as a Redis Cluster, behind one type: a
//! command connection (pipelined; publishing, the shared state, heartbeats)
//! and a dedicated pub/sub connection whose messages arrive as RESP3 pushes
//! on a channel of their own, so reading them never waits behind commands.
//! Every call is bounded by a timeout: a Redis that stalls makes calls fail,
//! never hang.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, FromRedisValue, IntoConnectionInfo,
    Pipeline, ProtocolVersion, PushInfo, RedisResult, TlsCertificates, Value,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::config::RedisSettings;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long any one command or pipeline may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// One connection, to a single Redis or to a cluster (which routes each
/// command to the shard that holds its key).
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Runs a pipeline whose every result is wanted. A cluster cannot take
    /// one pipeline across shards: there each command goes to its own shard,
    /// all at once on the multiplexed connections.
    pub async fn query<T: FromRedisValue>(&mut self, pipe: &Pipeline) -> RedisResult<T> {
        match self {
            Conn::Single(c) => pipe.query_async(c).await,
            Conn::Cluster(c) => {
                let values = each(c, pipe).await?;
                Ok(redis::from_redis_value(Value::Array(values))?)
            }
        }
    }

    /// Runs a pipeline for its effects only (its results are dropped).
    pub async fn exec(&mut self, pipe: &Pipeline) -> RedisResult<()> {
        match self {
            Conn::Single(c) => pipe.exec_async(c).await,
            Conn::Cluster(c) => each(c, pipe).await.map(drop),
        }
    }

    pub async fn cmd<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    pub async fn script<T: FromRedisValue>(
        &mut self,
        script: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self {
            Conn::Single(c) => script.invoke_async(c).await,
            Conn::Cluster(c) => script.invoke_async(c).await,
        }
    }

    /// Subscribes to channels, one command each on a cluster (they may live
    /// on different shards); `sharded` uses SSUBSCRIBE there.
    pub async fn subscribe(&mut self, channels: &[String], sharded: bool) -> RedisResult<()> {
        self.listen(channels, sharded, true).await
    }

    pub async fn unsubscribe(&mut self, channels: &[String], sharded: bool) -> RedisResult<()> {
        self.listen(channels, sharded, false).await
    }

    async fn listen(&mut self, channels: &[String], sharded: bool, on: bool) -> RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        match self {
            Conn::Single(c) if on => c.subscribe(channels).await,
            Conn::Single(c) => c.unsubscribe(channels).await,
            Conn::Cluster(c) => {
                for channel in channels {
                    match (on, sharded) {
                        (true, true) => c.ssubscribe(channel).await?,
                        (true, false) => c.subscribe(channel).await?,
                        (false, true) => c.sunsubscribe(channel).await?,
                        (false, false) => c.unsubscribe(channel).await?,
                    }
                }
                Ok(())
            }
        }
    }
}

async fn each(conn: &ClusterConnection, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
    let calls = pipe.cmd_iter().map(|cmd| {
        let mut conn = conn.clone();
        async move { cmd.query_async::<Value>(&mut conn).await }
    });
    futures_util::future::try_join_all(calls).await
}

/// Opens connections as the settings say.
#[derive(Clone)]
pub struct Connector {
    urls: Vec<ConnectionInfo>,
    cluster: bool,
    sharded: bool,
    /// The private CA of `redis.ca_file` (PEM), for `rediss://` URLs.
    ca: Option<TlsCertificates>,
}

impl Connector {
    pub fn new(settings: &RedisSettings) -> anyhow::Result<Self> {
        let urls = settings
            .urls()
            .iter()
            .map(|u| resp3(u.as_str().into_connection_info()?))
            .collect::<RedisResult<Vec<_>>>()
            .map_err(|e| anyhow::anyhow!("`redis.url`: {e}"))?;
        let ca_file = settings.ca_file.trim();
        let ca = match ca_file.is_empty() {
            true => None,
            false => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(
                    std::fs::read(ca_file)
                        .map_err(|e| anyhow::anyhow!("`redis.ca_file` {ca_file}: {e}"))?,
                ),
            }),
        };
        Ok(Self {
            urls,
            cluster: settings.cluster,
            sharded: settings.cluster && settings.sharded,
            ca,
        })
    }

    /// Whether position channels are sharded (SPUBLISH / SSUBSCRIBE).
    pub fn sharded(&self) -> bool {
        self.sharded
    }

    /// A command connection.
    pub async fn commands(&self) -> RedisResult<Conn> {
        self.open(None).await
    }

    /// A pub/sub connection and the receiver of its messages. The receiver
    /// also gets a `Disconnection` push when the connection is lost.
    pub async fn pubsub(&self) -> RedisResult<(Conn, UnboundedReceiver<PushInfo>)> {
        let (tx, rx) = unbounded_channel();
        Ok((self.open(Some(tx)).await?, rx))
    }

    async fn open(
        &self,
        push: Option<tokio::sync::mpsc::UnboundedSender<PushInfo>>,
    ) -> RedisResult<Conn> {
        if self.cluster {
            let mut builder = ClusterClientBuilder::new(self.urls.clone())
                .use_protocol(ProtocolVersion::RESP3)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(1);
            if let Some(tx) = push {
                builder = builder.push_sender(tx);
            }
            if let Some(ca) = &self.ca {
                builder = builder.certs(ca.clone());
            }
            let client = builder.build()?;
            let conn = timeout(client.get_async_connection()).await?;
            return Ok(Conn::Cluster(conn));
        }
        let Some(info) = self.urls.first() else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no Redis URL",
            )));
        };
        let client = match &self.ca {
            Some(ca) => Client::build_with_tls(info.clone(), ca.clone())?,
            None => Client::open(info.clone())?,
        };
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        if let Some(tx) = push {
            config = config.set_push_sender(tx);
        }
        let conn = timeout(client.get_multiplexed_async_connection_with_config(&config)).await?;
        Ok(Conn::Single(conn))
    }
}

fn resp3(info: ConnectionInfo) -> RedisResult<ConnectionInfo> {
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Ok(info.set_redis_settings(redis))
}

/// A connection attempt bounded like every other call (a cluster client
/// discovers its shards first, which takes several round trips).
async fn timeout<T>(attempt: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    match tokio::time::timeout(CONNECT_TIMEOUT * 3, attempt).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "connecting to Redis timed out",
        ))),
    }
}
