//! [`Client`] methods for events and RPCs outside channels, in both directions: `invoke` and
//! `transmit` to the server; `on_invoke` procedures and `receiver` streams for what the server
//! sends. The invoke timeout (`ack_timeout`) runs here, where the caller waits.

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{self, Instant};

use super::codec::ScError;
use super::state::{Handler, Outbound, Shared};
use super::{Client, ClientError, EventReceiver, InvokeError};

/// Cancels an invoke when its caller stops waiting (timeout or dropped future).
struct CancelGuard<'a> {
    shared: &'a Shared,
    req: u64,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.lock().cancel(self.req);
        }
    }
}

pub(super) fn encode<T: Serialize + ?Sized>(event: &str, data: &T) -> Result<String, InvokeError> {
    serde_json::to_string(data).map_err(|source| InvokeError::Encode {
        event: event.to_owned(),
        source,
    })
}

impl Client {
    /// Invokes a server procedure and deserialises its response (`null` when the server sent
    /// no data). Fails with [`InvokeError::Timeout`] after `ack_timeout`.
    pub async fn invoke<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<R, InvokeError> {
        let data = encode(event, data)?;
        let value = self.call(event, Some(data)).await?;
        serde_json::from_value(value.unwrap_or(Value::Null)).map_err(|source| InvokeError::Decode {
            event: event.to_owned(),
            source,
        })
    }

    /// Invokes a server procedure with raw JSON: `None` data is omitted from the packet
    /// (undefined); a `None` result means the response had no data.
    pub async fn invoke_value(
        &self,
        event: &str,
        data: Option<Value>,
    ) -> Result<Option<Value>, InvokeError> {
        let data = data.map(|d| d.to_string());
        self.call(event, data).await
    }

    pub(super) async fn call(
        &self,
        event: &str,
        data: Option<String>,
    ) -> Result<Option<Value>, InvokeError> {
        let shared = self.shared();
        let deadline = Instant::now() + shared.opts.ack_timeout;
        let (tx, rx) = oneshot::channel();
        let (req, queued) = {
            let mut st = shared.lock();
            let req = st.next_req();
            let queued = st
                .outbound(Outbound {
                    req,
                    event: event.to_owned(),
                    data,
                    reply: Some(tx),
                    deadline,
                })
                .map_err(|_| st.last_close());
            (req, queued)
        };
        match queued {
            Ok(poke) => self.poke(poke),
            Err((code, reason)) => {
                return Err(InvokeError::BadConnection {
                    event: event.to_owned(),
                    code,
                    reason,
                })
            }
        }
        let mut guard = CancelGuard {
            shared,
            req,
            armed: true,
        };
        match time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => {
                guard.armed = false;
                result
            }
            Ok(Err(_)) => {
                guard.armed = false;
                let (code, reason) = shared.lock().last_close();
                Err(InvokeError::BadConnection {
                    event: event.to_owned(),
                    code,
                    reason,
                })
            }
            Err(_) => Err(InvokeError::Timeout {
                event: event.to_owned(),
            }),
        }
    }

    pub(super) fn send_transmit(
        &self,
        event: &str,
        data: Option<String>,
    ) -> Result<(), ClientError> {
        let queued = {
            let mut st = self.shared().lock();
            let req = st.next_req();
            st.outbound(Outbound {
                req,
                event: event.to_owned(),
                data,
                reply: None,
                deadline: Instant::now() + self.shared().opts.ack_timeout,
            })
        };
        match queued {
            Ok(poke) => {
                self.poke(poke);
                Ok(())
            }
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Sends an event that expects no response (`{"event":E,"data":D}`). While not connected
    /// it is buffered (dropped if not sent within `ack_timeout`). Fails only if the data does
    /// not serialise or the client is closed for good.
    pub fn transmit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<(), ClientError> {
        let data = serde_json::to_string(data)?;
        self.send_transmit(event, Some(data))
    }

    /// Answers server invokes of `procedure` with `handler` (replacing any previous one). `Ok`
    /// becomes `{"rid":N[,"data":D]}`, `Err` becomes `{"rid":N,"error":E}`. Each invoke runs in
    /// its own task. Procedures without a handler are not answered (the server times out),
    /// like the official client.
    pub fn on_invoke<F, Fut>(&self, procedure: &str, handler: F)
    where
        F: Fn(Option<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, ScError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |data| Box::pin(handler(data)));
        self.shared().lock().set_procedure(procedure, handler);
    }

    /// Removes the handler of `procedure`.
    pub fn remove_invoke_handler(&self, procedure: &str) {
        self.shared().lock().remove_procedure(procedure);
    }

    /// A stream of the data of every server transmit named `event` (`None` when it had no
    /// data), from now on. Reserved events (`#publish`, `#kickOut`, `#setAuthToken`,
    /// `#removeAuthToken`) are handled by the client and never appear here.
    pub fn receiver(&self, event: &str) -> EventReceiver {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared().lock().add_receiver(event, tx);
        EventReceiver { rx }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::client::state::Handshake;
    use crate::client::ClientOptions;

    /// A client opened by hand (no connection task), its frames readable from the receiver.
    fn open_offline(ack_timeout: Duration) -> (Client, mpsc::UnboundedReceiver<Message>) {
        let opts = ClientOptions {
            ack_timeout,
            ..ClientOptions::default()
        };
        let (client, _ctl) = Client::offline(opts);
        let (writer, wire) = mpsc::unbounded_channel();
        {
            let mut st = client.shared().lock();
            let attempt = st.begin_attempt().expect("a new client");
            let mut hs = st
                .ws_open(attempt, writer, Duration::from_secs(20))
                .expect("current attempt");
            st.handle_text(
                attempt,
                r#"{"rid":1,"data":{"id":"s","pingTimeout":30000}}"#,
                &mut hs,
            );
        }
        (client, wire)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_invoke_times_out_after_ack_timeout_and_is_forgotten() {
        let (client, mut wire) = open_offline(Duration::from_secs(3));
        let started = Instant::now();
        let result: Result<serde_json::Value, _> = client.invoke("slow", &json!(1)).await;
        assert!(matches!(result, Err(InvokeError::Timeout { event }) if event == "slow"));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let frames: Vec<String> = std::iter::from_fn(|| wire.try_recv().ok())
            .map(|m| m.to_text().expect("text").to_owned())
            .collect();
        assert_eq!(
            frames,
            [
                r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##,
                r#"{"event":"slow","data":1,"cid":2}"#,
            ]
        );
        assert_eq!(client.shared().lock().awaiting_responses(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answered_invoke_is_decoded_into_the_callers_type() {
        let (client, mut wire) = open_offline(Duration::from_secs(3));
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.invoke::<_, Vec<u8>>("echo", &[1, 2]).await }
        });
        // The handshake is already queued; the invoke frame comes when the task runs.
        while wire.try_recv().is_ok() {}
        let frame = wire.recv().await.expect("the invoke frame");
        assert_eq!(
            frame.to_text().ok(),
            Some(r#"{"event":"echo","data":[1,2],"cid":2}"#)
        );
        // Already open: the handshake bookkeeping plays no part.
        let mut hs = Handshake {
            cid: 1,
            token: None,
            outcome: None,
        };
        client
            .shared()
            .lock()
            .handle_text(1, r#"{"rid":2,"data":[1,2]}"#, &mut hs);
        let result = call.await.expect("the call task");
        assert_eq!(result.ok(), Some(vec![1, 2]));
    }
}
