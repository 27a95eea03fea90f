//! A value built on a background thread, so that a kernel answers requests while it starts:
//! what needs the value waits for it ([`Startup::wait`]), what can do without it asks whether
//! it is there yet ([`Startup::try_get`]).

use std::sync::mpsc::{self, Receiver, TryRecvError};

pub struct Startup<T> {
    state: State<T>,
    /// What is being built, for the thread's name and the error when the builder dies.
    what: &'static str,
}

enum State<T> {
    Pending(Receiver<Result<T, String>>),
    Ready(T),
    Failed(String),
}

impl<T: Send + 'static> Startup<T> {
    /// Runs `build` on a thread named `<what>-start`.
    pub fn spawn(
        what: &'static str,
        build: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("{what}-start"))
            .spawn(move || {
                let _ = sender.send(build());
            })?;
        Ok(Startup {
            state: State::Pending(receiver),
            what,
        })
    }

    /// The value, waiting for the build to finish; the build's error if it failed.
    pub fn wait(&mut self) -> Result<&mut T, String> {
        if let State::Pending(receiver) = &self.state {
            let built = receiver.recv().unwrap_or_else(|_| Err(self.died()));
            self.finish(built);
        }
        // Never `None` once the build has been received.
        let what = self.what;
        self.ready()
            .unwrap_or_else(|| Err(format!("the {what} is not ready")))
    }

    /// The value, or its build's error; `None` while it is still being built.
    pub fn try_get(&mut self) -> Option<Result<&mut T, String>> {
        if let State::Pending(receiver) = &self.state {
            let built = match receiver.try_recv() {
                Ok(built) => built,
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => Err(self.died()),
            };
            self.finish(built);
        }
        self.ready()
    }

    fn died(&self) -> String {
        format!("the {} failed to start", self.what)
    }

    fn finish(&mut self, built: Result<T, String>) {
        self.state = match built {
            Ok(value) => State::Ready(value),
            Err(e) => State::Failed(e),
        };
    }

    fn ready(&mut self) -> Option<Result<&mut T, String>> {
        match &mut self.state {
            State::Ready(value) => Some(Ok(value)),
            State::Failed(e) => Some(Err(e.clone())),
            State::Pending(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_value_or_reports_its_error() {
        let (go, gate) = mpsc::channel::<()>();
        let mut started = Startup::spawn("thing", move || {
            gate.recv().map_err(|e| e.to_string())?;
            Ok(7)
        })
        .unwrap();
        assert!(started.try_get().is_none());
        go.send(()).unwrap();
        assert_eq!(started.wait().map(|v| *v), Ok(7));
        assert_eq!(started.try_get().map(|r| r.map(|v| *v)), Some(Ok(7)));

        let mut failed = Startup::<u8>::spawn("thing", || Err("no".into())).unwrap();
        assert_eq!(failed.wait().map(|v| *v), Err("no".to_owned()));
        let mut died = Startup::<u8>::spawn("thing", || panic!("builder panicked")).unwrap();
        assert_eq!(
            died.wait().map(|v| *v),
            Err("the thing failed to start".to_owned())
        );
    }
}
