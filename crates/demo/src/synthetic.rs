//! Synthetic audio (Opus-like, 50 frames/s, or DTX comfort noise when silent) and video
//! (30 frames/s, a keyframe every 2 s) published through the SDK's public API, as an
//! application with a real encoder would: it starts when the call reports its media
//! connection, makes a keyframe whenever the call asks for one
//! ([`Event::KeyframeRequested`]) or refuses a delta frame ([`CallError::KeyframeRequired`]),
//! and stops on request or when the call ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use blindcall_client::{Call, CallError, Event, MediaKind};
use blindcall_media::SyntheticSource;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a participant's synthetic frames look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticConfig {
    /// Sender id carried inside every frame.
    pub sender_id: u32,
    /// Seed of the sources.
    pub seed: u64,
    /// The audio is silence sent with discontinuous transmission (one small frame every
    /// 400 ms), as from a participant who is not talking.
    pub silent: bool,
}

#[derive(Debug, Default)]
struct Shared {
    started: AtomicBool,
    stopped: AtomicBool,
    keyframe: AtomicBool,
    wake: Notify,
}

/// Feeds a call's events to its synthetic media (cheap to clone; give one to whoever reads
/// the call's [`blindcall_client::Events`]).
#[derive(Debug, Clone)]
pub struct MediaHook(Arc<Shared>);

impl MediaHook {
    /// Starts the sources on [`Event::MediaConnected`]; makes the next video frame a keyframe
    /// on [`Event::KeyframeRequested`]; stops on [`Event::CallEnded`].
    pub fn on_event(&self, event: &Event) {
        match event {
            Event::MediaConnected => self.0.started.store(true, Ordering::Release),
            Event::KeyframeRequested { .. } => self.0.keyframe.store(true, Ordering::Release),
            Event::CallEnded { .. } => self.0.stopped.store(true, Ordering::Release),
            _ => return,
        }
        self.0.wake.notify_one();
    }
}

/// A participant's running synthetic media.
#[derive(Debug)]
pub struct SyntheticMedia {
    hook: MediaHook,
    task: JoinHandle<()>,
}

impl SyntheticMedia {
    /// Spawns the sources for `call`; nothing is published before the hook sees
    /// [`Event::MediaConnected`].
    pub fn spawn(call: Call, config: SyntheticConfig) -> Self {
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(run(call, config, Arc::clone(&shared)));
        Self {
            hook: MediaHook(shared),
            task,
        }
    }

    /// The hook to feed with the call's events.
    pub fn hook(&self) -> MediaHook {
        self.hook.clone()
    }

    /// Stops publishing and waits until the last frame was handed to the call (the call
    /// stays up).
    pub async fn stop(self) {
        self.hook.0.stopped.store(true, Ordering::Release);
        self.hook.0.wake.notify_one();
        let _ = self.task.await;
    }
}

async fn run(call: Call, config: SyntheticConfig, shared: Arc<Shared>) {
    while !shared.started.load(Ordering::Acquire) {
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        shared.wake.notified().await;
    }
    let mut audio = SyntheticSource::new(MediaKind::Audio, config.sender_id, config.seed);
    audio.set_silent(config.silent);
    let mut sources = [
        audio,
        SyntheticSource::new(MediaKind::Video, config.sender_id, config.seed),
    ];
    let start = Instant::now();
    let mut next_due = [start, start];
    loop {
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let due = next_due[0].min(next_due[1]);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = shared.wake.notified() => continue,
        }
        let now = Instant::now();
        for (i, source) in sources.iter_mut().enumerate() {
            while next_due[i] <= now {
                if shared.stopped.load(Ordering::Acquire) {
                    return;
                }
                let kind = source.kind();
                if kind == MediaKind::Video && shared.keyframe.swap(false, Ordering::AcqRel) {
                    source.request_keyframe();
                }
                let frame = source.next_frame();
                let interval = source.frame_interval();
                // Far behind (e.g. a stalled runtime): skip ahead rather than burst.
                let next = next_due[i] + interval;
                next_due[i] = if next + interval * 10 < now {
                    now
                } else {
                    next
                };
                let sent = match kind {
                    MediaKind::Audio => call.publish(kind, frame.data).await,
                    MediaKind::Video => call.publish_video(frame.data, frame.info.keyframe).await,
                };
                match sent {
                    Ok(()) => {}
                    // The call switched keys before this delta frame: the next one is a keyframe.
                    Err(CallError::KeyframeRequired) => source.request_keyframe(),
                    Err(CallError::Ended) => return,
                    // Not connected (any more) or a transient refusal: the next frame tries again.
                    Err(_) => {}
                }
            }
        }
    }
}
