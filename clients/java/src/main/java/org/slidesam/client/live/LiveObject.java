package org.slidesam.client.live;

import java.util.List;
import java.util.Objects;
import java.util.function.Function;
import org.slidesam.client.Click;
import org.slidesam.client.FieldOfView;
import org.slidesam.client.ObjectOptions;
import org.slidesam.client.ObjectSession;
import org.slidesam.client.Rect;
import org.slidesam.client.Result;
import org.slidesam.client.SlidesamClient;

/**
 * One prompt group's object on the server, kept in step with the group's prompts by the fewest steps:
 * added clicks are sent one step each; a moved or deleted click undoes back to the last click that is
 * still the same and sends the rest. A new box, or a prompt outside the open field of view, opens the
 * object again on a new field of view (box first, then one step per click, as the bridge sends them).
 * Every step adds exactly one click (or the box), which is what makes "undo" mean "one click less".
 */
final class LiveObject implements AutoCloseable {

    private final SlidesamClient client;
    private final ObjectOptions options;
    private ObjectSession session;

    LiveObject(SlidesamClient client, ObjectOptions options) {
        this.client = client;
        this.options = options;
    }

    /** The field of view the object is open on, or null. */
    Rect region() {
        return session == null ? null : session.fieldOfView().region();
    }

    /**
     * Brings the object to the group's prompts and returns its result. On a refused step the object
     * is closed, so the next call starts afresh.
     */
    Result sync(PromptGroup group, Function<PromptGroup, FieldOfView> fieldOfView) {
        try {
            if (session == null || !covers(session.fieldOfView().region(), group)
                    || !Objects.equals(group.box(), session.result().box())) {
                return reopen(group, fieldOfView.apply(group));
            }
            List<Click> current = session.result().clicks();
            int same = 0;
            while (same < current.size() && same < group.clicks().size() && current.get(same).equals(group.clicks().get(same))) {
                same++;
            }
            Result result = session.result();
            for (int i = current.size(); i > same; i--) {
                result = session.undo();
            }
            for (Click click : group.clicks().subList(same, group.clicks().size())) {
                result = session.click(click.x(), click.y(), click.positive());
            }
            return result;
        } catch (RuntimeException error) {
            close();
            throw error;
        }
    }

    private Result reopen(PromptGroup group, FieldOfView fov) {
        close();
        session = client.openObject(fov, options);
        Result result = session.result();
        if (group.box() != null) {
            result = session.box(group.box());
        }
        for (Click click : group.clicks()) {
            result = session.click(click.x(), click.y(), click.positive());
        }
        return result;
    }

    private static boolean covers(Rect region, PromptGroup group) {
        return group.points().stream().allMatch(p -> region.contains(p[0], p[1]));
    }

    @Override
    public void close() {
        if (session != null) {
            session.close();
            session = null;
        }
    }
}
