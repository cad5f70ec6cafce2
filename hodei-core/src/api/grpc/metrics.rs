//! MetricsService: disabled (FAILED_PRECONDITION) unless the server has a metrics backend.

use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

use super::parse_id;
use crate::control::{ControlPlane, MetricsBackend};
use crate::domain::ids::WorkerId;
use crate::proto::convert::{from_millis, to_millis};
use crate::proto::v1;
use crate::proto::v1::metrics_service_server::MetricsService;

/// MetricsService over the control plane's metrics backend.
#[derive(Debug, Clone)]
pub struct MetricsApi {
    cp: ControlPlane,
}

impl MetricsApi {
    /// The service.
    #[must_use]
    pub fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }

    fn backend(&self) -> Result<&Arc<MetricsBackend>, Status> {
        self.cp.metrics().ok_or_else(|| {
            Status::failed_precondition(
                "metrics are disabled on this server: start it with HODEI_METRICS_BACKEND=memory \
                 (or ControlPlane::builder().metrics(true))",
            )
        })
    }
}

fn worker_filter(s: &str) -> Result<Option<WorkerId>, Status> {
    if s.is_empty() {
        Ok(None)
    } else {
        parse_id(s, "worker_id").map(Some)
    }
}

type SampleStream = Pin<Box<dyn Stream<Item = Result<v1::MetricSample, Status>> + Send>>;

#[tonic::async_trait]
impl MetricsService for MetricsApi {
    type StreamMetricsStream = SampleStream;

    async fn stream_metrics(
        &self,
        req: Request<v1::StreamMetricsRequest>,
    ) -> Result<Response<Self::StreamMetricsStream>, Status> {
        let filter = worker_filter(&req.get_ref().worker_id)?;
        let rx = self.backend()?.subscribe();
        let stream = BroadcastStream::new(rx).filter_map(move |s| match s {
            Ok((w, t, u)) if filter.is_none_or(|f| f == w) => Some(Ok(v1::MetricSample {
                worker_id: w.to_string(),
                usage: Some((&u).into()),
                timestamp_ms: to_millis(t),
            })),
            _ => None,
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_aggregated_metrics(
        &self,
        req: Request<v1::GetAggregatedMetricsRequest>,
    ) -> Result<Response<v1::GetAggregatedMetricsResponse>, Status> {
        let r = req.get_ref();
        let filter = worker_filter(&r.worker_id)?;
        let window_ms = if r.window_ms == 0 {
            60_000
        } else {
            r.window_ms
        };
        let s = self.backend()?.summary(
            filter,
            chrono::Duration::milliseconds(i64::try_from(window_ms).unwrap_or(i64::MAX / 2)),
        );
        Ok(Response::new(v1::GetAggregatedMetricsResponse {
            samples: s.samples,
            avg_cpu_percent: s.avg_cpu_percent,
            max_cpu_percent: s.max_cpu_percent,
            avg_memory_bytes: s.avg_memory_bytes,
            max_memory_bytes: s.max_memory_bytes,
        }))
    }

    async fn get_time_series_metrics(
        &self,
        req: Request<v1::GetTimeSeriesMetricsRequest>,
    ) -> Result<Response<v1::GetTimeSeriesMetricsResponse>, Status> {
        let r = req.get_ref();
        let filter = worker_filter(&r.worker_id)?;
        let to = if r.to_ms == 0 {
            Utc::now()
        } else {
            from_millis(r.to_ms)
        };
        let series = self.backend()?.series(filter, from_millis(r.from_ms), to);
        Ok(Response::new(v1::GetTimeSeriesMetricsResponse {
            samples: series
                .into_iter()
                .map(|(w, t, u)| v1::MetricSample {
                    worker_id: w.to_string(),
                    usage: Some((&u).into()),
                    timestamp_ms: to_millis(t),
                })
                .collect(),
        }))
    }
}
