//! The WebSocket upgrade (issue 20). actix-http hands every request that asks for a
//! `Connection: upgrade` here, with the connection itself. The request still goes through the
//! whole application (middleware, authentication, `GET /ws` and its errors); when the answer
//! is the 101 of an accepted WebSocket, its head is written and the socket is taken over:
//! actix-http's buffers are dropped and [`session::run`] serves the connection on its own.
//! Any other answer is written as it is and the connection closes.

use std::rc::Rc;

use actix_codec::Framed;
use actix_http::{
    ConnectionType, Request, Response, StatusCode,
    body::{BoxBody, MessageBody},
    h1,
};
use actix_web::dev::{Service, ServiceResponse};
use futures_util::SinkExt;
use tokio::net::TcpStream;

use super::session::{self, Accepted};

/// Answers one upgrade request with the application `app`.
pub async fn serve<S, B>(app: Rc<S>, req: Request, framed: Framed<TcpStream, h1::Codec>) -> Result<(), actix_web::Error>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let res: Response<BoxBody> = match app.call(req).await {
        Ok(res) => res.map_into_boxed_body().into(),
        Err(e) => e.error_response().into(),
    };
    if let Err(e) = write(res, framed).await {
        tracing::debug!(error = %e, "writing the answer to an upgrade request");
    }
    Ok(())
}

async fn write(res: Response<BoxBody>, mut framed: Framed<TcpStream, h1::Codec>) -> std::io::Result<()> {
    let (mut head, body) = res.into_parts();
    let accepted = head.extensions_mut().remove::<Accepted>();
    if let Some(accepted) = accepted.filter(|_| head.status() == StatusCode::SWITCHING_PROTOCOLS) {
        framed.send(h1::Message::Item((head, actix_http::body::BodySize::None))).await?;
        let parts = framed.into_parts();
        // Runs apart from actix-http's connection task, which ends here with its buffers.
        actix_web::rt::spawn(session::run(parts.io, parts.read_buf, accepted));
        return Ok(());
    }
    head.head_mut().set_connection_type(ConnectionType::Close);
    let size = body.size();
    framed.send(h1::Message::Item((head, size))).await?;
    let bytes = actix_web::body::to_bytes(body).await.map_err(|e| std::io::Error::other(e.to_string()))?;
    if !bytes.is_empty() {
        framed.send(h1::Message::Chunk(Some(bytes))).await?;
    }
    framed.send(h1::Message::Chunk(None)).await?;
    Ok(())
}
