//! A TCP proxy a test owns, in front of a shared server (Cassandra): cutting it
//! is an outage for whoever connects through it, and for nobody else, so a
//! test can take "the database" away without stopping the shared one.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

#[derive(Debug)]
pub struct TcpProxy {
    pub address: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped on each cut: every connection open then is closed.
    cuts: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards to `target`.
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let target = target.to_owned();
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, cut) = watch::channel(0u64);
        let task = tokio::spawn({
            let up = up.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        // Down: the connection is refused as a dead server's would be.
                        drop(client);
                        continue;
                    }
                    let (target, mut cut) = (target.clone(), cut.clone());
                    cut.borrow_and_update();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&target).await else {
                            return;
                        };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        Ok(Self {
            address,
            up,
            cuts,
            task,
        })
    }

    /// The outage: every open connection is closed and new ones are refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|cuts| *cuts += 1);
    }

    /// The database is back.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
