//! The dashboard, compiled into the binary so the hub runs from anywhere with
//! no Node.js and no build step. (Debug builds read `static/` from disk.)

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "static/"]
struct Assets;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(index)))
        .service(web::resource("/{path:.*}").route(web::get().to(asset)));
}

async fn index() -> HttpResponse {
    serve("index.html")
}

async fn asset(req: HttpRequest) -> HttpResponse {
    let path = req.match_info().query("path");
    serve(path)
}

fn serve(path: &str) -> HttpResponse {
    match Assets::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype();
            let cache = if path.starts_with("vendor/") {
                "public, max-age=86400"
            } else {
                "no-cache"
            };
            HttpResponse::Ok()
                .content_type(mime)
                .insert_header((header::CACHE_CONTROL, cache))
                .body(file.data.into_owned())
        }
        None => HttpResponse::NotFound()
            .json(serde_json::json!({"error": {"code": "not_found", "message": "no such page"}})),
    }
}
